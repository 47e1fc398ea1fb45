-- peewee named the username index after the model ("user_username"); name it after the
-- table like every other index, so a conflict's constraint name reads as what it is.
ALTER INDEX user_username RENAME TO users_username;
